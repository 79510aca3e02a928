// Package sample is the synthetic data set of the quickstart and of
// `personify serve --demo`: 200,000 people in a dozen segments, drawn
// deterministically, so that every run loads the same data. Its identifiers
// are made-up addresses at example.com.
package sample

import (
	"fmt"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

// People is the size of the data set.
const People = 200_000

// Segments are the dozen segments of the sample, with the share of
// people in each.
var Segments = []struct {
	personify.Segment
	Share float64
}{
	{personify.Segment{Name: "runners", Purpose: "personalization", Description: "You logged a run in the last 90 days", Retention: 90 * 24 * time.Hour}, 0.18},
	{personify.Segment{Name: "cyclists", Purpose: "personalization", Description: "You bought cycling gear", Retention: 180 * 24 * time.Hour}, 0.12},
	{personify.Segment{Name: "swimmers", Purpose: "personalization", Description: "You bought swimming gear", Retention: 180 * 24 * time.Hour}, 0.07},
	{personify.Segment{Name: "hikers", Purpose: "personalization", Description: "You browsed hiking trails", Retention: 90 * 24 * time.Hour}, 0.10},
	{personify.Segment{Name: "ios", Purpose: "personalization", Description: "You use our iOS app"}, 0.45},
	{personify.Segment{Name: "android", Purpose: "personalization", Description: "You use our Android app"}, 0.50},
	{personify.Segment{Name: "new-customers", Purpose: "personalization", Description: "Your first order was in the last 30 days", Retention: 30 * 24 * time.Hour}, 0.08},
	{personify.Segment{Name: "lapsed-buyers", Purpose: "personalization", Description: "No order in the last year"}, 0.15},
	{personify.Segment{Name: "bargain-hunters", Purpose: "personalization", Description: "You mostly buy on sale", Retention: 365 * 24 * time.Hour}, 0.20},
	{personify.Segment{Name: "vip", Purpose: "personalization", Description: "Top customers", MinSize: 500}, 0.0012},
	{personify.Segment{Name: "newsletter-readers", Purpose: "email-marketing", Description: "You open our newsletter"}, 0.30},
	{personify.Segment{Name: "diabetes-programme", Purpose: "health", Description: "You joined the diabetes coaching programme", Sensitive: true}, 0.015},
}

// Engine is what Define and Load need: a *personify.Engine or a fleet's
// replica.
type Engine interface {
	DefinePurpose(p personify.Purpose) error
	Define(s personify.Segment) error
	Add(segment string, ids ...anonymize.Identifier) error
	SetConsent(id anonymize.Identifier, purpose string, granted bool) error
}

// Define defines the sample's purposes and segments.
func Define(e Engine) error {
	for _, p := range []personify.Purpose{
		{Name: "personalization", Model: personify.OptOut, Description: "Tailoring the site and app to groups of customers"},
		{Name: "email-marketing", Model: personify.OptIn, Description: "Newsletters and offers by email"},
		{Name: "health", Model: personify.OptIn, Description: "Health coaching programmes"},
	} {
		if err := e.DefinePurpose(p); err != nil {
			return err
		}
	}
	for _, s := range Segments {
		if err := e.Define(s.Segment); err != nil {
			return err
		}
	}
	return nil
}

// Load adds the synthetic people to their segments and returns how many
// there are. Membership is
// drawn deterministically from each person's number, so every run loads the
// same data; person 42 is in a few segments and in vip.
func Load(e Engine) (int, error) {
	members := make([][]anonymize.Identifier, len(Segments))
	var consenting []anonymize.Identifier
	for i := range People {
		id := anonymize.Email(fmt.Sprintf("member%06d@example.com", i))
		for s, seg := range Segments {
			if draw(uint64(i), uint64(s)) < seg.Share || i == 42 && (seg.Name == "runners" || seg.Name == "ios" || seg.Name == "vip") {
				members[s] = append(members[s], id)
			}
		}
		if draw(uint64(i), 99) < 0.6 {
			consenting = append(consenting, id)
		}
	}
	for s, ids := range members {
		if err := e.Add(Segments[s].Name, ids...); err != nil {
			return 0, err
		}
	}
	for _, id := range consenting {
		if err := e.SetConsent(id, "email-marketing", true); err != nil {
			return 0, err
		}
	}
	return People, nil
}

// draw returns a uniform number in [0, 1) from a person and a stream
// (splitmix64).
func draw(person, stream uint64) float64 {
	z := person*0x9E3779B97F4A7C15 + stream*0xBF58476D1CE4E5B9 + 1
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	z ^= z >> 31
	return float64(z>>11) / (1 << 53)
}
