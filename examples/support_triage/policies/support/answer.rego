# Drafting an answer (retrieval + the LLM writer): tenant grants, and the LLM never sees
# personal data.
package support.answer

import rego.v1

default allow := false

granted if input.capability.name in data.support.grants[input.tenant]

allow if granted

reason := sprintf("tenant %s is not granted %s", [input.tenant, input.capability.name]) if {
	not granted
}

reason_code := "not_granted" if not granted

obligations := {"redact": ["email", "phone", "card"]}
