# obligations of the wrong shape: redact must be a list of strings.
package conformance.errors.bad_obligations

allow := true

obligations := {"redact": "email"}
