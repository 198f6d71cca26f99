# Routing an invoice to auto-approval or a human.
#
# input.attributes (set by the intake step): amount_usd (number), currency (ISO code),
# vendor_confidence (0..1, from match-vendor).
package invoices.route

import rego.v1

default allow := false

granted if input.capability.name in data.invoices.grants[input.tenant]

currency_accepted if input.attributes.currency in data.invoices.accepted_currencies[input.tenant]

allow if {
	granted
	currency_accepted
}

reason := sprintf("tenant %s is not granted %s", [input.tenant, input.capability.name]) if {
	not granted
}

reason := sprintf("%s does not accept invoices in %s", [input.tenant, input.attributes.currency]) if {
	granted
	not currency_accepted
}

over_threshold if input.attributes.amount_usd > data.invoices.approval_threshold_usd[input.tenant]

vendor_unsure if input.attributes.vendor_confidence < data.invoices.vendor_match_min

# Above the tenant's threshold, or from a vendor we could not match surely: a human approves.
obligations := {"require_human": true} if over_threshold

obligations := {"require_human": true} if {
	not over_threshold
	vendor_unsure
}
