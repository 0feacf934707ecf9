package console

import (
	"testing"

	"github.com/agentkeys/agentkeys/internal/apiv1"
)

// TestReadsChart: one lane per reader and service, one point per read or mint
// placed by its time, refused ones marked; other kinds are not drawn.
func TestReadsChart(t *testing.T) {
	rows := []apiv1.Usage{
		{Time: 1000, Action: "store", Service: "openai", ActorRole: "owner"},
		{Time: 1000, Action: "read", Service: "openai", Alias: "bot", Result: "ok"},
		{Time: 1500, Action: "read", Service: "github", Alias: "bot", Result: "denied"},
		{Time: 2000, Action: "oidc.mint", Service: "oidc:aws", Alias: "bot", Result: "ok"},
		{Time: 2000, Action: "read", Service: "openai", ActorRole: "owner", Result: "ok"},
		{Time: 2000, Action: "agent.scope", Alias: "bot"},
	}
	c := readsChart(rows)
	if c.Points != 4 || len(c.Lanes) != 4 {
		t.Fatalf("%d points in %d lanes, want 4 in 4", c.Points, len(c.Lanes))
	}
	want := map[string]struct {
		x       int
		refused bool
	}{
		"agent bot / openai":   {plotLeft, false},
		"agent bot / github":   {(plotLeft + plotRight) / 2, true},
		"agent bot / oidc:aws": {plotRight, false},
		"owner / openai":       {plotRight, false},
	}
	for i, l := range c.Lanes {
		w, ok := want[l.Label]
		if !ok || len(l.Points) != 1 || l.Points[0].X != w.x || l.Points[0].Refused != w.refused {
			t.Errorf("lane %q: %+v", l.Label, l.Points)
		}
		if i > 0 && l.Y <= c.Lanes[i-1].Y {
			t.Errorf("lane %q is not below the one before", l.Label)
		}
	}
	// Everything at one time: the points sit in the middle.
	if c := readsChart(rows[1:2]); c.Points != 1 || c.Lanes[0].Points[0].X != (plotLeft+plotRight)/2 {
		t.Fatalf("one read: %+v", c)
	}
	if c := readsChart(rows[:1]); c.Points != 0 || len(c.Lanes) != 0 {
		t.Fatalf("no reads: %+v", c)
	}
}
