# reason must be a string.
package conformance.errors.bad_reason

allow := false

reason := 42
