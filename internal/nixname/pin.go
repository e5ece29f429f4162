package nixname

import "fmt"

// MaxPinName bounds a pin's name (blobserver's PUT /{org}/{flake}/_pins/{name}).
const MaxPinName = 100

// CheckPinName accepts a pin name: 1 to MaxPinName name characters
// ([A-Za-z0-9._+=?-], IsNameChar), not starting with '.'.
func CheckPinName(name string) error {
	if name == "" || len(name) > MaxPinName || name[0] == '.' {
		return fmt.Errorf("invalid pin name %q: 1 to %d characters of [A-Za-z0-9._+=?-], not starting with '.'", name, MaxPinName)
	}
	for i := 0; i < len(name); i++ {
		if !IsNameChar(name[i]) {
			return fmt.Errorf("invalid pin name %q: character %q not allowed", name, name[i])
		}
	}
	return nil
}
