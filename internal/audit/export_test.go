package audit

// SetMaxPagesPerSync bounds KeyView.Sync for a test; it returns the old bound.
func SetMaxPagesPerSync(n int) int { old := maxPagesPerSync; maxPagesPerSync = n; return old }
