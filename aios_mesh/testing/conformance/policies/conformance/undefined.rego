# allow has no default: for any tenant but acme it is undefined, which must deny.
package conformance.undefined

import rego.v1

allow if input.tenant == "acme"
