//go:build !unix

package devmode

// lockDataDir does nothing where flock is not available.
func lockDataDir(string) (func(), error) { return func() {}, nil }
