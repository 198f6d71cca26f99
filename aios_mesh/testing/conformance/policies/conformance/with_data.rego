# Reads the base document shipped as conformance_data/data.json (data.conformance_data).
package conformance.with_data

import rego.v1

default allow := false

allow if data.conformance_data.tenants[input.tenant].enabled

reason := "tenant is not enabled in data.conformance_data" if not allow
