# to_number fails on a non-numeric string: a built-in error (strict built-in errors).
package conformance.errors.builtin

import rego.v1

default allow := false

allow if to_number(input.attributes.amount) > 0
