package nixcache

import "github.com/flakegate/flakegate/internal/nixname"

// StoreDir is the only store directory the cache serves (nixname's).
const StoreDir = nixname.StoreDir

// ValidStorePathBase is nixname.ValidStorePathBase.
func ValidStorePathBase(s string) bool { return nixname.ValidStorePathBase(s) }

// StorePathBase is nixname.StorePathBase.
func StorePathBase(p string) (string, bool) { return nixname.StorePathBase(p) }
