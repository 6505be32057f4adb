package voucher

import (
	"strings"
	"testing"
)

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"7kq2m-xh9pd", "7KQ2M XH9PD", "0O1lI", "ÄBCDE-FGHJK", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, ok := Normalize(s)
		if !ok {
			return
		}
		if len(c) != CodeLen {
			t.Fatalf("Normalize(%q) = %q: wrong length", s, c)
		}
		for i := 0; i < len(c); i++ {
			if strings.IndexByte(Alphabet, c[i]) < 0 {
				t.Fatalf("Normalize(%q) = %q: %q is not in the alphabet", s, c, c[i])
			}
		}
		if again, ok := Normalize(Format(c)); !ok || again != c {
			t.Fatalf("Normalize(Format(%q)) = %q", c, again)
		}
	})
}
