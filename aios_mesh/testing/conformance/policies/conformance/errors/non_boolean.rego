# Packages whose evaluation must fail with a typed error, never abort the process.
package conformance.errors.non_boolean

allow := "yes"
