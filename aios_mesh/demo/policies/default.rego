# The mesh-wide default policy of the demo and the ticket_flow example
# ([policy] default = "mesh/default"): every capability passes here before its own policy.
package mesh.default

import rego.v1

default allow := false

allow if {
	input.caller != ""
	input.cost_estimate <= 0.05
}

reason := "the call names no caller" if input.caller == ""

reason_code := "anonymous_caller" if input.caller == ""

reason := "estimated cost above the mesh's ceiling of 0.05" if {
	input.caller != ""
	input.cost_estimate > 0.05
}

reason_code := "over_cost_ceiling" if {
	input.caller != ""
	input.cost_estimate > 0.05
}
