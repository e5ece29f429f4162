package fs

import (
	"testing"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/blob/blobtest"
)

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		s, err := Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
