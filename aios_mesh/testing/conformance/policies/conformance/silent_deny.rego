# allow is false and no reason is given: the adapter still says why.
package conformance.silent_deny

allow := false
