package console

import (
	"fmt"
	"sort"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
)

// chart is the Activity page's picture of reads and identity-token mints over
// time: one lane per reader and service, one point per read or mint at its
// time, refused ones marked. It is drawn as inline SVG on the server, so it
// needs no script.
type chart struct {
	Width, Height int
	Lanes         []lane
	Points        int // every point on every lane
	From, To      string
	AxisY         int
}

type lane struct {
	Label  string // reader / service
	Y      int
	Points []point
}

type point struct {
	X       int
	Refused bool
	Title   string
}

const (
	chartWidth = 720
	laneHeight = 28
	plotLeft   = 230 // lane labels to the left
	plotRight  = 700
)

// readsChart draws rows' reads and mints (rows oldest first).
func readsChart(rows []apiv1.Usage) chart {
	byLane := map[string]*lane{}
	var first, last int64
	for _, u := range rows {
		if u.Action != "read" && u.Action != "oidc.mint" {
			continue
		}
		if first == 0 || u.Time < first {
			first = u.Time
		}
		last = max(last, u.Time)
	}
	c := chart{Width: chartWidth}
	for _, u := range rows {
		if u.Action != "read" && u.Action != "oidc.mint" {
			continue
		}
		who := u.ActorRole
		if u.Alias != "" {
			who = "agent " + u.Alias
		}
		key := who + " / " + u.Service
		l := byLane[key]
		if l == nil {
			l = &lane{Label: key}
			byLane[key] = l
		}
		x := (plotLeft + plotRight) / 2
		if last > first {
			x = plotLeft + int(int64(plotRight-plotLeft)*(u.Time-first)/(last-first))
		}
		t := time.Unix(0, u.Time).UTC().Format("2006-01-02 15:04:05Z")
		l.Points = append(l.Points, point{X: x, Refused: u.Result == "denied",
			Title: fmt.Sprintf("%s %s %s by %s: %s", t, u.Action, u.Service, who, u.Result)})
		c.Points++
	}
	keys := make([]string, 0, len(byLane))
	for k := range byLane {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		l := byLane[k]
		l.Y = 20 + i*laneHeight
		c.Lanes = append(c.Lanes, *l)
	}
	c.AxisY = 20 + len(keys)*laneHeight
	c.Height = c.AxisY + 24
	if first != 0 {
		c.From = time.Unix(0, first).UTC().Format("2006-01-02 15:04:05Z")
		c.To = time.Unix(0, last).UTC().Format("2006-01-02 15:04:05Z")
	}
	return c
}
