package identity

// CacheLen exposes the verified-token cache size to the tests.
func (v *MultiVerifier) CacheLen() int { return v.cache.len() }

// IsTokenText exposes the token alphabet check to the tests.
var IsTokenText = isTokenText
