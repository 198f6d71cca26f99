# Opening a refund request (an agent tool): money leaves the shop, so a human approves
# every request first.
package support.refund

import rego.v1

default allow := false

granted if input.capability.name in data.support.grants[input.tenant]

allow if granted

reason := sprintf("tenant %s is not granted %s", [input.tenant, input.capability.name]) if {
	not granted
}

reason_code := "not_granted" if not granted

obligations := {"require_human": true}
