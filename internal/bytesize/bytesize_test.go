package bytesize

import (
	"flag"
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	cases := []struct {
		in      string
		want    int64
		wantErr string // "" = ok
	}{
		{"0", 0, ""},
		{"1024", 1024, ""},
		{"007", 7, ""},
		{"10B", 10, ""},
		{"10b", 10, ""},
		// Decimal: K, KB = 1000 and so on.
		{"2K", 2000, ""},
		{"2KB", 2000, ""},
		{"16M", 16_000_000, ""},
		{"16MB", 16_000_000, ""},
		{"3G", 3_000_000_000, ""},
		{"3GB", 3_000_000_000, ""},
		{"2T", 2_000_000_000_000, ""},
		{"2TB", 2_000_000_000_000, ""},
		// Binary: KiB = 1024 and so on.
		{"2KiB", 2048, ""},
		{"16MiB", 16_777_216, ""},
		{"64GiB", 64 << 30, ""},
		{"2TiB", 2 << 40, ""},
		// Case-insensitive units.
		{"16m", 16_000_000, ""},
		{"16mb", 16_000_000, ""},
		{"16Mb", 16_000_000, ""},
		{"16mib", 16 << 20, ""},
		{"16MIB", 16 << 20, ""},
		{"1k", 1000, ""},
		// Spaces around, and between number and unit.
		{" 1 MiB ", 1 << 20, ""},
		{"1\tKB", 1000, ""},
		{"\n5\n", 5, ""},
		// The largest size.
		{"9223372036854775807", math.MaxInt64, ""},
		{"8388607TiB", 8388607 << 40, ""},
		{"9223372036854775K", 9223372036854775000, ""},

		// Overflow.
		{"9223372036854775808", 0, "more than 9223372036854775807 bytes"},
		{"99999999999999999999999", 0, "more than"},
		{"8388608TiB", 0, "more than"},
		{"9999999TiB", 0, "more than"},
		{"9223372036854776K", 0, "more than"},
		// Negative, signs.
		{"-1", 0, "negative"},
		{"-1MiB", 0, "negative"},
		{"- 1", 0, "negative"},
		{"+1", 0, "whole number"},
		// Junk.
		{"", 0, "empty"},
		{"   ", 0, "empty"},
		{"lots", 0, "whole number"},
		{"MiB", 0, "whole number"},
		{"16XB", 0, `unknown unit "XB"`},
		{"16Ki", 0, `unknown unit "Ki"`},
		{"16 M B", 0, "unknown unit"},
		{"16MiBs", 0, "unknown unit"},
		{"1e6", 0, "unknown unit"},
		{"0x10", 0, "unknown unit"},
		{"1.5G", 0, "whole number"},
		{"1,000", 0, "whole number"},
		{"1_000", 0, "whole number"},
		{"1 000", 0, "whole number"},
		{"16MiB extra", 0, "unknown unit"},
	}
	for _, c := range cases {
		got, err := Parse(c.in)
		if c.wantErr == "" {
			if err != nil || got != c.want {
				t.Errorf("Parse(%q) = %d, %v; want %d", c.in, got, err, c.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("Parse(%q) = %d, %v; want an error containing %q", c.in, got, err, c.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), strconv.Quote(c.in)) {
			t.Errorf("Parse(%q): error %q does not name the input", c.in, err)
		}
	}
}

func TestFormat(t *testing.T) {
	cases := []struct {
		n    int64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1500, "1500"},
		{1000, "1KB"},
		{1024, "1KiB"},
		{16_000_000, "16MB"},
		{16 << 20, "16MiB"},
		{1_024_000, "1000KiB"},
		{64 << 30, "64GiB"},
		{64_000_000_000, "64GB"},
		{2 << 40, "2TiB"},
		{5_000_000_000_000, "5TB"},
		{math.MaxInt64, "9223372036854775807"},
		{-1, "-1"},
	}
	for _, c := range cases {
		got := Format(c.n)
		if got != c.want {
			t.Errorf("Format(%d) = %q, want %q", c.n, got, c.want)
		}
		if c.n >= 0 {
			if back, err := Parse(got); err != nil || back != c.n {
				t.Errorf("Parse(Format(%d)) = %d, %v", c.n, back, err)
			}
		}
	}
}

func TestSizeFlag(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	maxNar := Size(64 * GiB)
	fs.Var(&maxNar, "maxNar", "largest")
	if maxNar.String() != "64GiB" {
		t.Errorf("default String() = %q", maxNar.String())
	}
	if err := fs.Parse([]string{"-maxNar", "16M"}); err != nil || maxNar.Int64() != 16_000_000 {
		t.Fatalf("-maxNar 16M: %d, %v", maxNar, err)
	}
	if err := fs.Parse([]string{"-maxNar", "16MiB"}); err != nil || maxNar != 16<<20 {
		t.Fatalf("-maxNar 16MiB: %d, %v", maxNar, err)
	}
	err := fs.Parse([]string{"-maxNar", "16QB"})
	if err == nil || !strings.Contains(err.Error(), `"16QB"`) {
		t.Fatalf("-maxNar 16QB: %v, want an error naming the input", err)
	}
	if maxNar != 16<<20 {
		t.Errorf("a refused value changed the flag to %d", maxNar)
	}
}
