# Obligations: what an allow requires of the pipeline.
package conformance.obligations

import rego.v1

default allow := false

allow if input.cost_estimate <= 10

redact contains "email"

redact contains "iban" if input.data_classification in {"confidential", "restricted"}

obligations := {
	"redact": redact,
	"require_human": input.data_classification == "restricted",
	"max_cost": 2.5,
}
