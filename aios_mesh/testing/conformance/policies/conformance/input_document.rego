# Allows only when every field of PolicyInput.to_document() arrives where the contract says.
package conformance.input_document

import rego.v1

default allow := false

allow if {
	input.version == "1"
	input.tenant == "acme"
	input.caller == "svc-invoices"
	input.capability == {"name": "extract-invoice-fields", "version": "2.1.0"}
	input.data_classification == "confidential"
	input.model == "invoice-extractor@7"
	input.cost_estimate == 0.25
	input.attributes.region == "eu"
	input.attributes.pages == 3
	input.attributes.tags == ["urgent", "q3"]
	input.attributes.note == "say \"hi\" \\ bye"
}

reason := "the input document does not match the contract" if not allow
