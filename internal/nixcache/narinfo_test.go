package nixcache

import (
	"bytes"
	"strings"
	"testing"

	"github.com/flakegate/flakegate/internal/nixname"
)

// A narinfo as served by cache.nixos.org, with its real signature.
const nixosNarInfo = `StorePath: /nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin
URL: nar/05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56.nar.xz
Compression: xz
FileHash: sha256:05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56
FileSize: 68852
NarHash: sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0
NarSize: 196040
References: 0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0 6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115 j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h-zlib-1.2.12 yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n
Deriver: 5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv
Sig: cache.nixos.org-1:TsTTb3WGTZKphvYdBHXwo6weVILmTytUjLB+vcX89fOjjRicCHmKA4RCPMVLkj6TMJ4GMX3HPVWRdD1hkeKZBQ==
`

const nixosPublicKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="

// A narinfo of an uncompressed NAR as Nix 2.8 uploads it.
const noneNarInfo = `StorePath: /nix/store/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-hello.txt
URL: nar/1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0.nar
Compression: none
FileHash: sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0
FileSize: 120
NarHash: sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0
NarSize: 120
References: 
`

func TestFingerprintMatchesNix(t *testing.T) {
	ok, err := VerifyNarInfo([]byte(nixosNarInfo), []string{nixosPublicKey})
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatal("cache.nixos.org signature does not verify against our fingerprint")
	}
	n, err := ParseNarInfo([]byte(nixosNarInfo))
	if err != nil {
		t.Fatal(err)
	}
	want := "1;/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin;sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0;196040;" +
		"/nix/store/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0,/nix/store/6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115," +
		"/nix/store/j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h-zlib-1.2.12,/nix/store/yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n"
	if got := n.Fingerprint(); got != want {
		t.Fatalf("fingerprint\n got %s\nwant %s", got, want)
	}
}

func TestParseNarInfoFields(t *testing.T) {
	n, err := ParseNarInfo([]byte(nixosNarInfo))
	if err != nil {
		t.Fatal(err)
	}
	if n.Hash != "syd87l2rxw8cbsxmxl853h0r6pdwhwjr" || n.File != "05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56.nar.xz" ||
		n.Compression != nixname.CompressionXZ || n.FileSize != 68852 || n.NarSize != 196040 ||
		len(n.References) != 4 || n.Deriver != "5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv" || len(n.Sigs) != 1 {
		t.Fatalf("parsed %+v", n)
	}
	m, err := ParseNarInfo([]byte(noneNarInfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.References) != 0 || m.Compression != nixname.CompressionNone {
		t.Fatalf("parsed %+v", m)
	}
}

// edit replaces the line starting with key in text (or appends when absent,
// deletes when repl is "").
func edit(text, key, repl string) string {
	var out []string
	found := false
	for _, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(l, key+":") && !found {
			found = true
			if repl != "" {
				out = append(out, repl)
			}
			continue
		}
		out = append(out, l)
	}
	if !found {
		out = append(out, repl)
	}
	return strings.Join(out, "\n") + "\n"
}

func TestParseNarInfoRejects(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"empty", "", "empty"},
		{"not utf8", "StorePath: \xff\n", "UTF-8"},
		{"no colon", nixosNarInfo + "garbage\n", "Key: value"},
		{"unknown field", nixosNarInfo + "Foo: bar\n", `unknown field "Foo"`},
		{"duplicate field", nixosNarInfo + "NarSize: 1\n", "duplicate field NarSize"},
		{"control character", edit(nixosNarInfo, "System", "System: x\x01"), "control character"},
		{"missing StorePath", edit(nixosNarInfo, "StorePath", ""), "no StorePath"},
		{"missing NarHash", edit(nixosNarInfo, "NarHash", ""), "no NarHash"},
		{"missing FileSize", edit(nixosNarInfo, "FileSize", ""), "no FileSize"},
		{"store path outside /nix/store", edit(nixosNarInfo, "StorePath", "StorePath: /gnu/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl"), "not a valid path"},
		{"store path bad hash", edit(nixosNarInfo, "StorePath", "StorePath: /nix/store/eeeeel2rxw8cbsxmxl853h0r6pdwhwjr-curl"), "not a valid path"},
		{"store path without name", edit(nixosNarInfo, "StorePath", "StorePath: /nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr"), "not a valid path"},
		{"unsupported compression", edit(nixosNarInfo, "Compression", "Compression: br"), "not supported"},
		{"URL not under nar/", edit(nixosNarInfo, "URL", "URL: ../05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56.nar.xz"), "want nar/"},
		{"URL escapes", edit(nixosNarInfo, "URL", "URL: nar/../../etc/passwd"), "want nar/"},
		{"URL vs compression", edit(nixosNarInfo, "Compression", "Compression: zstd"), "does not match Compression"},
		{"URL vs FileHash", edit(nixosNarInfo, "FileHash", "FileHash: sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0"), "does not match FileHash"},
		{"md5 hash", edit(nixosNarInfo, "NarHash", "NarHash: md5:0123456789abcdef0123456789abcdef"), "only sha256"},
		{"bad hash", edit(nixosNarInfo, "NarHash", "NarHash: sha256:xyz"), "NarHash"},
		// FuzzParseNarInfo found it (testdata/fuzz/FuzzParseNarInfo/regress-narhash-base64-33-bytes):
		// 44 base64 characters without padding pass go-nix's length check
		// but decode to 33 bytes, and the rendering did not parse back.
		{"fuzz: NarHash base64 of 33 bytes", narHash33, "NarHash"},
		{"NarHash base64 of 31 bytes", edit(nixosNarInfo, "NarHash", "NarHash: sha256:QHvNm2CLenj5iFkwws4fyvrgl30xzNQ/wemYy0damq=="), "NarHash"},
		{"NarHash SRI of 33 bytes", edit(nixosNarInfo, "NarHash", "NarHash: sha256-QHvNm2CLenj5iFkwws4fyvrgl30xzNQ/wemYy0damqwA"), "NarHash"},
		{"FileHash base64 of 33 bytes", edit(nixosNarInfo, "FileHash", "FileHash: sha256:QHvNm2CLenj5iFkwws4fyvrgl30xzNQ/wemYy0damqwA"), "FileHash"},
		{"zero NarSize", edit(nixosNarInfo, "NarSize", "NarSize: 0"), "NarSize 0"},
		{"negative FileSize", edit(nixosNarInfo, "FileSize", "FileSize: -1"), "FileSize"},
		{"none with differing sizes", edit(noneNarInfo, "NarSize", "NarSize: 121"), "Compression is none"},
		{"bad reference", edit(nixosNarInfo, "References", "References: not-a-path"), `reference "not-a-path"`},
		{"duplicate reference", edit(nixosNarInfo, "References", "References: 0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl 0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl"), "listed twice"},
		{"bad deriver", edit(nixosNarInfo, "Deriver", "Deriver: 5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl"), "Deriver"},
		{"bad signature", edit(nixosNarInfo, "Sig", "Sig: nokey"), "signature"},
		{"empty signature", edit(nixosNarInfo, "Sig", "Sig: k:"), "signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseNarInfo([]byte(tt.text))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.text)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

// narHash33 is nixosNarInfo with a NarHash whose base64 digest is 33 bytes
// (the fuzzer's find).
const narHash33 = `StorePath: /nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin
URL: nar/05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56.nar.xz
Compression: xz
FileHash: sha256:05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56
FileSize: 68852
NarHash: sha256:QHvNm2CLenj5iFkwws4fyvrgl30xzNQ/wemYy0damqwA
NarSize: 196040
References: 0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0 6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115 j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h-zlib-1.2.12 yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n
Deriver: 5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv
Sig: cache.nixos.org-1:TsTTb3WGTZKphvYdBHXwo6weVILmTytUjLB+vcX89fOjjRicCHmKA4RCPMVLkj6TMJ4GMX3HPVWRdD1hkeKZBQ==
`

// Every encoding of a 32-byte sha256 digest that Nix writes is accepted
// and means the same digest.
func TestParseNarInfoHashEncodings(t *testing.T) {
	want, err := ParseNarInfo([]byte(nixosNarInfo))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{
		"sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0",
		"sha256:407bcd9b608b7a78f9885930c2ce1fcafae0977d31ccd43fc1e998cb475a9aac",
		"sha256:QHvNm2CLenj5iFkwws4fyvrgl30xzNQ/wemYy0damqw=",
		"sha256-QHvNm2CLenj5iFkwws4fyvrgl30xzNQ/wemYy0damqw=",
	} {
		n, err := ParseNarInfo([]byte(edit(nixosNarInfo, "NarHash", "NarHash: "+h)))
		if err != nil {
			t.Fatalf("%s: %v", h, err)
		}
		if !bytes.Equal(n.NarHash, want.NarHash) {
			t.Fatalf("%s: digest %x, want %x", h, n.NarHash, want.NarHash)
		}
	}
}

func TestRenderRoundTrip(t *testing.T) {
	for _, text := range []string{nixosNarInfo, noneNarInfo, caRefsNarInfo} {
		n, err := ParseNarInfo([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		out := n.Render([]string{"k:sig"})
		if bytes.Contains(out, []byte("cache.nixos.org-1:")) {
			t.Fatalf("uploaded signature kept:\n%s", out)
		}
		if !bytes.Contains(out, []byte("\nSig: k:sig\n")) {
			t.Fatalf("signature missing:\n%s", out)
		}
		// Without the Sig lines the rendering reproduces Nix's own text.
		var want []string
		for _, l := range strings.Split(text, "\n") {
			if !strings.HasPrefix(l, "Sig: ") {
				want = append(want, l)
			}
		}
		if got := string(n.Render(nil)); got != strings.Join(want, "\n") {
			t.Fatalf("render\n got %q\nwant %q", got, strings.Join(want, "\n"))
		}
	}
}

// An uploaded narinfo's System must be a Nix system name: any text was
// taken, up to 1 MiB (adversarial review, 2026-12-05). A stored narinfo
// from before still parses (and is re-signed after a key rotation).
func TestUploadedNarInfoSystem(t *testing.T) {
	for _, c := range []struct {
		system string
		ok     bool
	}{
		{"x86_64-linux", true}, {"aarch64-darwin", true}, {"riscv64-none-elf", true}, {"", true},
		{strings.Repeat("x", 1_000_000), false}, {"x86_64 linux", false}, {strings.Repeat("a", 65), false},
	} {
		text := edit(nixosNarInfo, "System", "System: "+c.system)
		n, err := ParseNarInfo([]byte(text))
		if err != nil {
			t.Fatalf("System %.20q: stored narinfos must still parse: %v", c.system, err)
		}
		if err := n.CheckUpload(); (err == nil) != c.ok || (err != nil && !strings.Contains(err.Error(), "not a Nix system name")) {
			t.Errorf("System %.20q: CheckUpload = %v, want ok %v", c.system, err, c.ok)
		}
	}
}
