# Two complete rules produce different values when both attributes are set.
package conformance.errors.conflict

import rego.v1

allow := true if input.attributes.a

allow := false if input.attributes.b
