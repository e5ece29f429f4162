package blobserverapp

import "testing"

func TestSizeFlag(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1024", 1024, true},
		{"64GiB", 64 << 30, true},
		{"1 MiB", 1 << 20, true},
		{"5M", 5_000_000, true},
		{"2K", 2000, true},
		{"10B", 10, true},
		{"0", 0, false},
		{"-1", 0, false},
		{"lots", 0, false},
		{"9999999TiB", 0, false},
	}
	for _, tt := range tests {
		var n int64
		err := SizeFlag(&n).Set(tt.in)
		if (err == nil) != tt.ok || (tt.ok && n != tt.want) {
			t.Errorf("Set(%q) = %d, %v; want %d ok=%v", tt.in, n, err, tt.want, tt.ok)
		}
	}
}

func TestRateAndListFlags(t *testing.T) {
	var r int64 = 5
	if err := RateFlag(&r).Set("0"); err != nil || r != 0 {
		t.Errorf("rate 0: %d %v", r, err)
	}
	if err := RateFlag(&r).Set("1MiB"); err != nil || r != 1<<20 {
		t.Errorf("rate 1MiB: %d %v", r, err)
	}
	if err := RateFlag(&r).Set("slow"); err == nil {
		t.Error("rate slow accepted")
	}
	var l []string
	if err := ListFlag(&l).Set(" new.sec, ,old.sec "); err != nil || len(l) != 2 || l[0] != "new.sec" || l[1] != "old.sec" {
		t.Errorf("list: %q %v", l, err)
	}
}
