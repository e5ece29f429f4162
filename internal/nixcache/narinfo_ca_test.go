package nixcache

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// Narinfos Nix 2.8 wrote (`nix copy --to file://…`) for content-addressed
// paths: `nix-store --add-fixed --recursive sha256` of a directory (no
// references), and `nix store make-content-addressed` of a text file with
// two references and of a build output that references itself.
const (
	caSrcNarInfo = `StorePath: /nix/store/lw2wgb1a47k83091vil51194vr3iz5md-src
URL: nar/0qgp3k5b8fh89k6m9gvzcngpm3y4cf0q7xfqpnkpbvi5kghaxsk0.nar.xz
Compression: xz
FileHash: sha256:0qgp3k5b8fh89k6m9gvzcngpm3y4cf0q7xfqpnkpbvi5kghaxsk0
FileSize: 188
NarHash: sha256:15ylf75mvc6yr9wb6799275l9m9giywz3cdrwmar1ss0gvy56450
NarSize: 648
References: 
CA: fixed:r:sha256:15ylf75mvc6yr9wb6799275l9m9giywz3cdrwmar1ss0gvy56450
`
	caRefsNarInfo = `StorePath: /nix/store/f7klqg7yp80rm3vks9fqvini4ish9aih-top
URL: nar/0d316x6frh9yamwih4p7bdsp9a2k67ixcdzrb1xg7psxf12f3b7v.nar.xz
Compression: xz
FileHash: sha256:0d316x6frh9yamwih4p7bdsp9a2k67ixcdzrb1xg7psxf12f3b7v
FileSize: 208
NarHash: sha256:09ycc7vskzk6n6naqvmx65g8vhcl2npzyypbdv808lsjp57mh1kg
NarSize: 216
References: az31knmcmkcvqp327ha4d0jxlpimbbi3-dep lw2wgb1a47k83091vil51194vr3iz5md-src
CA: fixed:r:sha256:09ycc7vskzk6n6naqvmx65g8vhcl2npzyypbdv808lsjp57mh1kg
`
	caSelfNarInfo = `StorePath: /nix/store/9djx2wy8ybg3rzqxkirq4mv8v93b53y6-selfref
URL: nar/15bkg0h329vbii23zcapmgfj8ic6mnh23lrwb2maqjlxabx4al06.nar
Compression: none
FileHash: sha256:15bkg0h329vbii23zcapmgfj8ic6mnh23lrwb2maqjlxabx4al06
FileSize: 216
NarHash: sha256:15bkg0h329vbii23zcapmgfj8ic6mnh23lrwb2maqjlxabx4al06
NarSize: 216
References: 9djx2wy8ybg3rzqxkirq4mv8v93b53y6-selfref f7klqg7yp80rm3vks9fqvini4ish9aih-top
CA: fixed:r:sha256:1x91009myshm5j3r484vv50y7chqhr4alk83z0hfcpfbgrg9vzlw
`
	// builtins.toFile: a text-hashed path.
	caTextNarInfo = `StorePath: /nix/store/c61i4gz5k01hfwfm979s0m23hxb0c733-dep
URL: nar/0i0g5h0y4w5xf5rynap2x27zaib43xl5qr5wlj9vw83ai7p732m1.nar
Compression: none
FileHash: sha256:0i0g5h0y4w5xf5rynap2x27zaib43xl5qr5wlj9vw83ai7p732m1
FileSize: 120
NarHash: sha256:0i0g5h0y4w5xf5rynap2x27zaib43xl5qr5wlj9vw83ai7p732m1
NarSize: 120
References: 
CA: text:sha256:13ns0xymhkhgng27kis2x8w05bc8gw6nifqkg7r2npb3z0gfgqwc
`
)

// caLine returns the CA value of a narinfo text.
func caLine(text string) string {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, "CA: "); ok {
			return v
		}
	}
	return ""
}

// reencode writes the nixbase32 hash of a "<prefix><nixbase32>" CA in
// another encoding.
func reencode(t *testing.T, ca, enc string) string {
	t.Helper()
	i := strings.LastIndexByte(ca, ':')
	d, err := nixbase32.DecodeString(ca[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	switch enc {
	case "base16":
		return ca[:i+1] + hex.EncodeToString(d)
	case "base64":
		return ca[:i+1] + base64.StdEncoding.EncodeToString(d)
	}
	t.Fatalf("encoding %s", enc)
	return ""
}

// A fixed:r:sha256 CA that matches NarHash and the store path Nix computes
// is kept, in any hash encoding, and rendered as Nix writes it.
func TestCAFixedNARKept(t *testing.T) {
	for name, text := range map[string]string{"no references": caSrcNarInfo, "references": caRefsNarInfo} {
		ca := caLine(text)
		for _, enc := range []string{"nixbase32", "base16", "base64"} {
			t.Run(name+"/"+enc, func(t *testing.T) {
				in := text
				if enc != "nixbase32" {
					in = edit(text, "CA", "CA: "+reencode(t, ca, enc))
				}
				n, err := ParseNarInfo([]byte(in))
				if err != nil {
					t.Fatal(err)
				}
				if n.CA != ca {
					t.Fatalf("CA %q, want %q", n.CA, ca)
				}
				if got := string(n.Render(nil)); got != text {
					t.Fatalf("render\n got %q\nwant %q", got, text)
				}
			})
		}
	}
}

// Content addresses that cannot be checked against the NAR are dropped
// from the narinfo the server renders.
func TestCAUncheckableDropped(t *testing.T) {
	nar := caLine(caSrcNarInfo)[len("fixed:r:sha256:"):]
	tests := []struct{ name, text string }{
		{"text (builtins.toFile)", caTextNarInfo},
		// Hashed modulo its own hash part: differs from NarHash.
		{"recursive sha256 with self reference", caSelfNarInfo},
		{"text base16", edit(caTextNarInfo, "CA", "CA: "+reencode(t, caLine(caTextNarInfo), "base16"))},
		{"flat sha256", edit(caSrcNarInfo, "CA", "CA: fixed:sha256:"+nar)},
		{"flat md5", edit(caSrcNarInfo, "CA", "CA: fixed:md5:0123456789abcdef0123456789abcdef")},
		{"recursive sha1", edit(caSrcNarInfo, "CA", "CA: fixed:r:sha1:0123456789abcdef0123456789abcdef01234567")},
		{"recursive sha512", edit(caSrcNarInfo, "CA", "CA: fixed:r:sha512:"+strings.Repeat("ab", 64))},
		{"git sha1", edit(caSrcNarInfo, "CA", "CA: fixed:git:sha1:0123456789abcdef0123456789abcdef01234567")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := ParseNarInfo([]byte(tt.text))
			if err != nil {
				t.Fatal(err)
			}
			if n.CA != "" {
				t.Fatalf("kept CA %q", n.CA)
			}
			if out := n.Render([]string{"k:sig"}); bytes.Contains(out, []byte("CA:")) {
				t.Fatalf("rendered a CA:\n%s", out)
			}
		})
	}
}

func TestCARejects(t *testing.T) {
	nar := caLine(caSrcNarInfo)[len("fixed:r:sha256:"):]
	otherHash := caLine(caRefsNarInfo)[len("fixed:r:sha256:"):]
	tests := []struct{ name, text, want string }{
		{"unknown method", edit(caSrcNarInfo, "CA", "CA: source:sha256:"+nar), "CA"},
		{"no algorithm", edit(caSrcNarInfo, "CA", "CA: fixed:r:"+nar), "CA"},
		{"no hash", edit(caSrcNarInfo, "CA", "CA: fixed:r:sha256"), "CA"},
		{"unknown algorithm", edit(caSrcNarInfo, "CA", "CA: fixed:r:sha3:"+nar), "CA"},
		{"SRI hash", edit(caSrcNarInfo, "CA", "CA: fixed:r:sha256-"+reencode(t, "x:"+nar, "base64")[2:]), "CA"},
		{"prefixed hash", edit(caSrcNarInfo, "CA", "CA: fixed:r:sha256:sha256:"+nar), "CA"},
		{"text with r", edit(caTextNarInfo, "CA", "CA: text:r:sha256:"+nar), "CA"},
		{"bad nixbase32", edit(caSrcNarInfo, "CA", "CA: fixed:r:sha256:"+strings.Repeat("e", 52)), "CA"},
		{"base64 of 33 bytes", edit(caSrcNarInfo, "CA", "CA: fixed:r:sha256:"+strings.Repeat("A", 44)), "CA"},
		{"wrong length", edit(caSrcNarInfo, "CA", "CA: fixed:r:sha256:"+nar[1:]), "CA"},
		{"flat with malformed hash", edit(caSrcNarInfo, "CA", "CA: fixed:sha256:xyz"), "CA"},
		{"NarHash mismatch", edit(caSrcNarInfo, "CA", "CA: fixed:r:sha256:"+otherHash), "does not match NarHash"},
		{"store path mismatch", edit(caSrcNarInfo, "StorePath", "StorePath: /nix/store/lw2wgb1a47k83091vil51194vr3iz5md-other"), "does not match StorePath"},
		{"reference dropped", edit(caRefsNarInfo, "References", "References: lw2wgb1a47k83091vil51194vr3iz5md-src"), "does not match StorePath"},
		// Without its self-reference the modulo hash is checked as a NAR hash.
		{"self reference dropped", edit(caSelfNarInfo, "References", "References: f7klqg7yp80rm3vks9fqvini4ish9aih-top"), "does not match NarHash"},
		// A fixed:r:sha256 CA on an input-addressed path (it claims what
		// the path is not).
		{"input-addressed path", edit(nixosNarInfo, "CA", "CA: fixed:r:sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0"), "does not match StorePath"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseNarInfo([]byte(tt.text))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.text)
			}
			if !strings.Contains(err.Error(), "CA ") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not name CA and %q", err, tt.want)
			}
		})
	}
}
