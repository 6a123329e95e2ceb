package egress

import (
	"bytes"
	"strings"
	"testing"
)

func TestSealedInjectionRoundTrip(t *testing.T) {
	privLine, pubLine, err := GenerateEdgeKey()
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := ParseEdgePublicKeys(pubLine)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ParseEdgePrivateKey(privLine)
	if err != nil {
		t.Fatal(err)
	}
	inj := &EdgeInjection{Cred: "stripe", Material: Material{Secret: []byte(canary)}, MaxBody: 10}
	sealed, err := SealInjection(pubs, priv.ID, "orgs/acme/", inj)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, canary) || canaryScrubber().String(sealed) != sealed {
		t.Fatal("the secret shows in the sealed text")
	}
	got, err := priv.Open("orgs/acme", "stripe", sealed)
	if err != nil || !bytes.Equal(got.Material.Secret, []byte(canary)) {
		t.Fatalf("open: %v", err)
	}
	// Bound to its mount and credential.
	if _, err := priv.Open("orgs/other", "stripe", sealed); err == nil {
		t.Fatal("opened for another org")
	}
	if _, err := priv.Open("orgs/acme", "openai", sealed); err == nil {
		t.Fatal("opened for another credential")
	}
	if _, err := SealInjection(pubs, "nope", "orgs/acme/", inj); err != ErrUnknownEdgeKey {
		t.Fatalf("unknown key: %v", err)
	}
	other, _, _ := GenerateEdgeKey()
	otherKey, _ := ParseEdgePrivateKey(other)
	if _, err := otherKey.Open("orgs/acme", "stripe", sealed); err == nil {
		t.Fatal("opened with another edge key")
	}
	if _, err := ParseEdgePublicKeys("abc:" + strings.SplitN(pubLine, ":", 2)[1]); err == nil {
		t.Fatal("a key id that does not match its key was accepted")
	}
}
