package sandbox

// SetRemountFallback makes read-only binds use the remount-each-submount
// path of kernels without mount_setattr (or not), until restore is called.
func SetRemountFallback(on bool) (restore func()) {
	old := remountFallback
	remountFallback = on
	return func() { remountFallback = old }
}
