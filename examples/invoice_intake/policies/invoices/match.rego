# Matching a vendor (and embedding its name): tenant grants only; the index is tenant-scoped.
package invoices.match

import rego.v1

default allow := false

allow if input.capability.name in data.invoices.grants[input.tenant]

reason := sprintf("tenant %s is not granted %s", [input.tenant, input.capability.name]) if {
	not input.capability.name in data.invoices.grants[input.tenant]
}

reason_code := "not_granted" if not input.capability.name in data.invoices.grants[input.tenant]
