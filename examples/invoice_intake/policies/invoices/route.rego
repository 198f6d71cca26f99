# Routing an invoice to auto-approval or a human.
#
# input.attributes (set by the intake step): amount_usd (number), currency (ISO code),
# vendor_confidence (0..1, from match-vendor); route.schema.json declares them, and the mesh
# checks the input against it before this rule runs.
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

reason_code := "not_granted" if not granted

reason := sprintf("%s does not accept invoices in %v", [input.tenant, input.attributes.currency]) if {
	granted
	not currency_accepted
}

reason_code := "currency_not_accepted" if {
	granted
	not currency_accepted
}

# Fail closed: an invoice is approved without a human only on positive evidence, an amount
# that is a number at or below the tenant's threshold and a vendor match that is a number at
# or above the minimum. A missing, null or mistyped attribute (the string "50000") is no
# evidence, so a human approves. Written the other way round ("a human if over the
# threshold"), a missing amount would skip review: an undefined comparison is never true.
within_threshold if {
	is_number(input.attributes.amount_usd)
	input.attributes.amount_usd <= data.invoices.approval_threshold_usd[input.tenant]
}

vendor_sure if {
	is_number(input.attributes.vendor_confidence)
	input.attributes.vendor_confidence >= data.invoices.vendor_match_min
}

auto_approvable if {
	within_threshold
	vendor_sure
}

# Above the tenant's threshold, from a vendor we could not match surely, or with anything
# malformed: a human approves.
obligations := {"require_human": true} if not auto_approvable
