package federation

import "testing"

func TestServerACLRules(t *testing.T) {
	no := false
	acl := serverACL{Allow: []string{"*.example.org", "k51qzi5uqu5d*"}, Deny: []string{"bad.example.org", "h?ck.example.org"}, AllowIPLiterals: &no}
	for server, denied := range map[string]bool{
		"ok.example.org":      false,
		"OK.Example.ORG:8448": false,
		"bad.example.org":     true,
		"hack.example.org":    true,
		"example.org":         true, // matches no allow glob
		"k51qzi5uqu5dabc":     false,
		"1.2.3.4":             true,
		"[::1]:8448":          true,
	} {
		if got := acl.denies(server); got != denied {
			t.Errorf("denies(%q) = %v, want %v", server, got, denied)
		}
	}
	if (serverACL{}).denies("anyone") != true {
		t.Error("an ACL that allows nobody let a server in")
	}
}
