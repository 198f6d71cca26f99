# Drafting a review brief with the LLM: tenant grants only. The brief is advice for the
# reviewer; the model runs in process (not external), so nothing is redacted before it.
package invoices.brief

import rego.v1

default allow := false

allow if input.capability.name in data.invoices.grants[input.tenant]

reason := sprintf("tenant %s is not granted %s", [input.tenant, input.capability.name]) if {
	not input.capability.name in data.invoices.grants[input.tenant]
}

reason_code := "not_granted" if not input.capability.name in data.invoices.grants[input.tenant]
