# Drafting an answer (retrieval + the LLM writer): tenant grants, no personal data reaches
# the LLM, and — asked again after the answer with its groundedness (aios_mesh.rag's gate) —
# a citation outside the retrieved chunks is refused and a weakly grounded answer goes to a
# human, at the tenant's own threshold.
package support.answer

import rego.v1

default allow := false

granted if input.capability.name in data.support.grants[input.tenant]

g := input.attributes.groundedness

bad_citation if count(g.bad_citations) > 0

allow if {
	granted
	not bad_citation
}

reason := sprintf("tenant %s is not granted %s", [input.tenant, input.capability.name]) if {
	not granted
}

reason_code := "not_granted" if not granted

reason := "the answer cites a chunk that was not retrieved" if {
	granted
	bad_citation
}

reason_code := "citation_not_retrieved" if {
	granted
	bad_citation
}

weak if g.score < data.support.min_groundedness[input.tenant]

reason_code := "not_grounded" if {
	granted
	not bad_citation
	weak
}

obligations := {"redact": ["email", "phone", "card"], "require_human": true} if {
	not bad_citation
	weak
}

else := {"redact": ["email", "phone", "card"]}
