# An allow without obligations: the defaults apply.
package conformance.no_obligations

allow := true
