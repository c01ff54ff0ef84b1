package breaker

// CheckNoLeak lets the external tests use checkNoLeak.
var CheckNoLeak = checkNoLeak
