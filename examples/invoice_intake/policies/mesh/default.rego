# The mesh-wide default policy: every call of every capability passes here first
# ([policy] default = "mesh/default" in the profiles), whatever its own policy says.
# Both must allow; the obligations of both apply.
package mesh.default

import rego.v1

default allow := false

identified if input.caller != ""

affordable if input.cost_estimate <= data.mesh.max_cost_per_call

allow if {
	identified
	affordable
}

reason := "the call names no caller" if not identified

reason_code := "anonymous_caller" if not identified

reason := sprintf("estimated cost %v is above the mesh's ceiling %v", [
	input.cost_estimate,
	data.mesh.max_cost_per_call,
]) if {
	identified
	not affordable
}

reason_code := "over_cost_ceiling" if {
	identified
	not affordable
}
