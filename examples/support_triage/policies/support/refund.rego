# Opening a refund request (an agent tool): tenant grants. Money leaves the shop, so the
# exception agent declares the tool as needing approval (approval=["open-refund"]): the run
# parks in the review queue before the call, and the tool runs only after a human approved.
package support.refund

import rego.v1

default allow := false

granted if input.capability.name in data.support.grants[input.tenant]

allow if granted

reason := sprintf("tenant %s is not granted %s", [input.tenant, input.capability.name]) if {
	not granted
}

reason_code := "not_granted" if not granted
