package federation

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

type verifierFunc func([]gomatrixserverlib.VerifyJSONRequest) []gomatrixserverlib.VerifyJSONResult

func (f verifierFunc) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	return f(reqs), nil
}

// The connected peer's own X-Matrix signature is vouched for by the
// connection; any other server's still goes to the real verifier.
func TestPeerVouchedChecksOnlyOtherServers(t *testing.T) {
	var asked []spec.ServerName
	refuseAll := verifierFunc(func(reqs []gomatrixserverlib.VerifyJSONRequest) []gomatrixserverlib.VerifyJSONResult {
		out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
		for i, r := range reqs {
			asked = append(asked, r.ServerName)
			out[i].Error = errors.New("bad signature")
		}
		return out
	})
	v := peerVouched{peer: "a.test", next: refuseAll}
	ctx := context.Background()
	res, err := v.VerifyJSONs(ctx, []gomatrixserverlib.VerifyJSONRequest{{ServerName: "a.test", Message: []byte(`{}`)}})
	if err != nil || len(res) != 1 || res[0].Error != nil {
		t.Fatalf("the peer's own signature: %+v, %v", res, err)
	}
	res, err = v.VerifyJSONs(ctx, []gomatrixserverlib.VerifyJSONRequest{{ServerName: "b.test", Message: []byte(`{}`)}})
	if err != nil || len(res) != 1 || res[0].Error == nil {
		t.Fatalf("another server's signature was not checked: %+v, %v", res, err)
	}
	if !slices.Equal(asked, []spec.ServerName{"b.test"}) {
		t.Errorf("the verifier was asked about %v, want only b.test", asked)
	}
}
