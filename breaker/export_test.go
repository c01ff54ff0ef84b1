package breaker

// CheckNoLeak lets the external tests use checkNoLeak.
var CheckNoLeak = checkNoLeak

// GroupEntries returns the number of entries in g's map, which Len counts.
func GroupEntries(g *Group) int {
	n := 0
	g.m.Range(func(any, any) bool { n++; return true })
	return n
}
