package balancer

// Settle waits until b has published every verdict reported before the
// call: the snapshot then reflects them, panic mode and zone shares
// included.
func Settle(b *Balancer) {
	b.pubMu.Lock()
	for s := b.pub.Load(); s == pubRunning || s == pubDirty; s = b.pub.Load() {
		b.pubDone.Wait()
	}
	b.pubMu.Unlock()
}
