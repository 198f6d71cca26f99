# Demo policy for the support-ticket capabilities.
package demo.tickets

import rego.v1

default allow := false

suspended := {"initech"}

allow if {
	not input.tenant in suspended
	input.cost_estimate <= 0.01
}

reason := "tenant is suspended" if input.tenant in suspended

# globex's contract says no e-mail addresses or phone numbers may reach a model.
obligations := {"redact": ["email", "phone"]} if input.tenant == "globex"
