# Reading an invoice: tenant grants, a cost cap, and no personal data ever reaches the model.
package invoices.extract

import rego.v1

default allow := false

allow if {
	input.capability.name in data.invoices.grants[input.tenant]
	input.cost_estimate <= data.invoices.max_cost_per_call
}

reason := sprintf("tenant %s is not granted %s", [input.tenant, input.capability.name]) if {
	not input.capability.name in data.invoices.grants[input.tenant]
}

reason_code := "not_granted" if not input.capability.name in data.invoices.grants[input.tenant]

# Contact e-mails, phone numbers and bank accounts are masked before the model sees the text.
obligations := {"redact": ["email", "phone", "iban"]}
