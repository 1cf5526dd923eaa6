package cluster

import "fmt"

// Line is one GPIO line: a gpiochip and an offset on it.
type Line struct {
	Chip   string // e.g. gpiochip1
	Offset int
}

// bbbPins maps BeagleBone Black header pins usable as GPIOs to the AM335x
// GPIO bank and bit. The kernel names bank N "gpiochipN" on the BBB (the
// omap-gpio driver registers the four banks in order).
var bbbPins = map[string][2]int{
	"P8_3": {1, 6}, "P8_4": {1, 7}, "P8_5": {1, 2}, "P8_6": {1, 3},
	"P8_7": {2, 2}, "P8_8": {2, 3}, "P8_9": {2, 5}, "P8_10": {2, 4},
	"P8_11": {1, 13}, "P8_12": {1, 12}, "P8_13": {0, 23}, "P8_14": {0, 26},
	"P8_15": {1, 15}, "P8_16": {1, 14}, "P8_17": {0, 27}, "P8_18": {2, 1},
	"P8_19": {0, 22}, "P8_20": {1, 31}, "P8_21": {1, 30}, "P8_22": {1, 5},
	"P8_23": {1, 4}, "P8_24": {1, 1}, "P8_25": {1, 0}, "P8_26": {1, 29},
	"P8_27": {2, 22}, "P8_28": {2, 24}, "P8_29": {2, 23}, "P8_30": {2, 25},
	"P8_31": {0, 10}, "P8_32": {0, 11}, "P8_33": {0, 9}, "P8_34": {2, 17},
	"P8_35": {0, 8}, "P8_36": {2, 16}, "P8_37": {2, 14}, "P8_38": {2, 15},
	"P8_39": {2, 12}, "P8_40": {2, 13}, "P8_41": {2, 10}, "P8_42": {2, 11},
	"P8_43": {2, 8}, "P8_44": {2, 9}, "P8_45": {2, 6}, "P8_46": {2, 7},
	"P9_11": {0, 30}, "P9_12": {1, 28}, "P9_13": {0, 31}, "P9_14": {1, 18},
	"P9_15": {1, 16}, "P9_16": {1, 19}, "P9_17": {0, 5}, "P9_18": {0, 4},
	"P9_21": {0, 3}, "P9_22": {0, 2}, "P9_23": {1, 17}, "P9_24": {0, 15},
	"P9_25": {3, 21}, "P9_26": {0, 14}, "P9_27": {3, 19}, "P9_28": {3, 17},
	"P9_29": {3, 15}, "P9_30": {3, 16}, "P9_31": {3, 14}, "P9_41": {0, 20},
	"P9_42": {0, 7},
}

// LookupPin maps a BeagleBone header name (P9_12) to its gpiochip line.
func LookupPin(pin string) (Line, error) {
	bl, ok := bbbPins[pin]
	if !ok {
		return Line{}, fmt.Errorf("%q is not a BeagleBone Black GPIO header pin (e.g. P9_12, P8_8)", pin)
	}
	return Line{Chip: fmt.Sprintf("gpiochip%d", bl[0]), Offset: bl[1]}, nil
}
