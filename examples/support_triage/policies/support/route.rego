# Routing a ticket's answer: send it (auto), have a human see it first, or refuse (spam).
#
# input.attributes (set by the triage step, declared in route.schema.json): category and
# confidence (classify-ticket), handled_by ("draft", "agent" or "none"), groundedness (0..1,
# the drafted answer's; 0 without a draft) and agent_status ("answered", "awaiting_approval",
# "escalated"; "none" without an agent run).
package support.route

import rego.v1

default allow := false

granted if input.capability.name in data.support.grants[input.tenant]

spam if {
	input.attributes.category == "spam"
	input.attributes.confidence >= data.support.spam_min_confidence
}

allow if {
	granted
	not spam
}

reason := sprintf("tenant %s is not granted %s", [input.tenant, input.capability.name]) if {
	not granted
}

reason_code := "not_granted" if not granted

reason := "spam: no answer is sent" if {
	granted
	spam
}

reason_code := "spam" if {
	granted
	spam
}

# Fail closed: an answer goes out without a human only on positive evidence.
sure if input.attributes.confidence >= data.support.min_confidence

grounded if input.attributes.groundedness >= data.support.min_groundedness[input.tenant]

auto_category if input.attributes.category in data.support.auto_send[input.tenant]

auto_sendable if {
	input.attributes.handled_by == "draft"
	sure
	grounded
	auto_category
}

auto_sendable if {
	input.attributes.handled_by == "agent"
	sure
	input.attributes.agent_status == "answered"
}

human_reason := "low_confidence" if not sure

else := "not_grounded" if {
	input.attributes.handled_by == "draft"
	not grounded
}

else := "category_not_auto_sent" if {
	input.attributes.handled_by == "draft"
	not auto_category
}

else := sprintf("agent_%s", [input.attributes.agent_status]) if {
	input.attributes.handled_by == "agent"
}

else := "no_answer"

# Unsure, weakly grounded, not a category the tenant auto-sends, an agent run that did not
# answer: a human sees the answer first, and the reason code says why.
obligations := {"require_human": true} if not auto_sendable

reason_code := human_reason if {
	granted
	not spam
	not auto_sendable
}
