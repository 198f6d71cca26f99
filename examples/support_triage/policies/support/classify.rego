# Classifying a ticket: tenant grants, and no personal data ever reaches the model.
package support.classify

import rego.v1

default allow := false

granted if input.capability.name in data.support.grants[input.tenant]

allow if granted

reason := sprintf("tenant %s is not granted %s", [input.tenant, input.capability.name]) if {
	not granted
}

reason_code := "not_granted" if not granted

# E-mail addresses, phone and card numbers are masked before the classifier sees the text.
obligations := {"redact": ["email", "phone", "card"]}
