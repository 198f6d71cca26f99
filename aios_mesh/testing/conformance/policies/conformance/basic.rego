# Conformance bundle of the aios-mesh Policy port: allow, deny with a reason, default deny.
package conformance.basic

import rego.v1

default allow := false

allow if {
	input.tenant in {"acme", "globex"}
	input.capability.name == "extract-invoice-fields"
}

reason := sprintf("tenant %s may not call %s", [input.tenant, input.capability.name]) if not allow
