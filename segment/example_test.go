package segment_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/personify-go/personify/segment"
)

func ExampleSet() {
	runners := segment.New(1, 2, 3, 5, 8)
	ios := segment.New(2, 3, 4)

	fmt.Println(runners.Contains(5), runners.Len())
	fmt.Println("runners on iOS:", runners.AndLen(ios))

	runners.AndNot(ios) // in place, like math/big
	fmt.Println(slices.Collect(runners.All()))
	// Output:
	// true 5
	// runners on iOS: 2
	// [1 5 8]
}

func ExampleAnd() {
	a := segment.New(1, 2, 3, 4)
	b := segment.New(2, 3, 4, 5)
	c := segment.New(3, 4, 5, 6)

	fmt.Println(segment.And(a, b, c).AppendTo(nil))
	fmt.Println(segment.Or(a, b, c).AppendTo(nil))
	fmt.Println(segment.Xor(a, b, c).AppendTo(nil))
	fmt.Println(segment.And(a, nil).Len()) // nil is the empty set
	// Output:
	// [3 4]
	// [1 2 3 4 5 6]
	// [1 3 4 6]
	// 0
}

func ExampleParse() {
	e, err := segment.Parse(`runners AND (ios OR android) AND NOT "high value"`)
	if err != nil {
		panic(err)
	}
	fmt.Println(e)
	fmt.Println(e.Names())

	_, err = segment.Parse("runners & (ios | android")
	fmt.Println(err)
	fmt.Println(errors.Is(err, segment.ErrSyntax))
	// Output:
	// runners & (ios | android) & !"high value"
	// [android high value ios runners]
	// segment: expression: column 25: expected ')' to close '(' at column 11, found end of input
	// true
}

func ExampleExpr_Eval() {
	sets := map[string]*segment.Set{
		"runners": segment.New(1, 2, 3, 4, 5),
		"ios":     segment.New(1, 2, 9),
		"android": segment.New(3, 4),
		"churned": segment.New(2, 4),
	}
	resolve := func(name string) (*segment.Set, error) {
		s, ok := sets[name]
		if !ok {
			return nil, fmt.Errorf("unknown segment %q", name)
		}
		return s, nil
	}
	all := segment.New(1, 2, 3, 4, 5, 6, 7, 8, 9) // every member, for NOT

	e, _ := segment.Parse("runners & (ios | android) & !churned")
	audience, _ := e.Eval(resolve, all) // & !churned is an AND NOT: no complement
	fmt.Println(audience.AppendTo(nil), e.NeedsUniverse())

	e, _ = segment.Parse("!runners")
	audience, _ = e.Eval(resolve, all)
	fmt.Println(audience.AppendTo(nil), e.NeedsUniverse())

	e, _ = segment.Parse("runners & walkers")
	_, err := e.Eval(resolve, all)
	fmt.Println(err)
	// Output:
	// [1 3] false
	// [6 7 8 9] true
	// segment: expression: resolving "walkers": unknown segment "walkers"
}

func ExampleTimed() {
	day := 24 * time.Hour
	start := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	visitors := segment.NewTimed(day)

	visitors.AddMany([]uint32{1, 2, 3}, start.Add(9*time.Hour))
	visitors.Add(2, start.Add(2*day)) // a new visit refreshes member 2
	visitors.Add(4, start.Add(3*day+time.Hour))

	at, _ := visitors.AddedAt(2)
	fmt.Println("member 2 recorded at", at.Format(time.DateOnly))

	// Keep two days: drop what was recorded before March 3.
	expired := visitors.ExpireBefore(start.Add(2 * day))
	fmt.Println("expired", expired.AppendTo(nil), "kept", visitors.Members().AppendTo(nil))
	for at, members := range visitors.Epochs() {
		fmt.Println(at.Format(time.DateOnly), members.AppendTo(nil))
	}
	// Output:
	// member 2 recorded at 2025-03-03
	// expired [1 3] kept [2 4]
	// 2025-03-03 [2]
	// 2025-03-04 [4]
}

func ExampleWriter() {
	var buf bytes.Buffer
	w, _ := segment.NewWriter(&buf)
	_ = w.Set("runners", segment.New(1, 2, 3))
	visitors := segment.NewTimed(time.Hour)
	visitors.Add(7, time.Date(2025, 3, 1, 10, 30, 0, 0, time.UTC))
	_ = w.Timed("visitors", visitors)
	_ = w.Blob("directory", 42, []byte("engine state"))
	if err := w.Close(); err != nil {
		panic(err)
	}

	r, err := segment.NewReader(&buf)
	if err != nil {
		panic(err)
	}
	for {
		sec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		switch sec.Kind {
		case segment.KindSet:
			fmt.Println(sec.Kind, sec.Name, sec.Set().AppendTo(nil))
		case segment.KindTimed:
			at, _ := sec.Timed().AddedAt(7)
			fmt.Println(sec.Kind, sec.Name, at.Format(time.TimeOnly))
		case segment.KindBlob:
			fmt.Println(sec.Kind, sec.Name, sec.Aux, string(sec.Blob()))
		}
	}
	// Output:
	// set runners [1 2 3]
	// timed visitors 10:00:00
	// blob directory 42 engine state
}

func ExampleWriteSets() {
	var buf bytes.Buffer
	_, err := segment.WriteSets(&buf, map[string]*segment.Set{
		"runners": segment.New(1, 2, 3),
		"ios":     segment.New(2, 9),
	})
	if err != nil {
		panic(err)
	}
	snapshot := buf.Bytes()

	sets, err := segment.ReadSets(bytes.NewReader(snapshot))
	fmt.Println(sets["ios"].AppendTo(nil), sets["runners"].Len(), err)

	_, err = segment.ReadSets(bytes.NewReader(snapshot[:len(snapshot)-1]))
	fmt.Println(errors.Is(err, segment.ErrTruncated) || errors.Is(err, segment.ErrLength))
	// Output:
	// [2 9] 3 <nil>
	// true
}
