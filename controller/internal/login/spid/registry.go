package spid

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/crewjam/saml"
)

// Registry is the list of SPID (and CIE) identity providers, read from a local copy of AgID's registry metadata
// file (an md:EntitiesDescriptor with one md:EntityDescriptor per IdP) or of a single IdP's metadata.
type Registry struct {
	list []apiclient.SPIDIdP
	byID map[string]*saml.EntityDescriptor
}

// LoadRegistry reads the registry metadata file at path.
func LoadRegistry(path string) (*Registry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading SPID IdP registry: %w", err)
	}
	return ParseRegistry(path, data)
}

// ParseRegistry parses registry metadata named name. Every IdP needs an IDPSSODescriptor with a SingleSignOnService
// of the HTTP-POST or HTTP-Redirect binding and at least one signing certificate; all problems are reported at
// once, each with the IdP's entity id. Entities that are not IdPs (an SP in the same file) are skipped.
func ParseRegistry(name string, data []byte) (*Registry, error) {
	var eds []saml.EntityDescriptor
	switch root := rootName(data); root {
	case "EntitiesDescriptor":
		var all saml.EntitiesDescriptor
		if err := xml.Unmarshal(data, &all); err != nil {
			return nil, fmt.Errorf("%s: parsing IdP registry: %w", name, err)
		}
		eds = flatten(all)
	case "EntityDescriptor":
		var ed saml.EntityDescriptor
		if err := xml.Unmarshal(data, &ed); err != nil {
			return nil, fmt.Errorf("%s: parsing IdP metadata: %w", name, err)
		}
		eds = []saml.EntityDescriptor{ed}
	default:
		return nil, fmt.Errorf("%s: not SAML metadata (root element %q, want md:EntitiesDescriptor or md:EntityDescriptor)", name, root)
	}
	r := &Registry{byID: map[string]*saml.EntityDescriptor{}}
	var errs []error
	for i := range eds {
		ed := &eds[i]
		if len(ed.IDPSSODescriptors) == 0 {
			continue
		}
		if ed.EntityID == "" {
			errs = append(errs, fmt.Errorf("%s: IdP #%d has no entityID", name, i+1))
			continue
		}
		if _, dup := r.byID[ed.EntityID]; dup {
			errs = append(errs, fmt.Errorf("%s: IdP %q: listed twice", name, ed.EntityID))
			continue
		}
		if err := checkIdP(ed); err != nil {
			errs = append(errs, fmt.Errorf("%s: IdP %q: %w", name, ed.EntityID, err))
			continue
		}
		r.byID[ed.EntityID] = ed
		r.list = append(r.list, apiclient.SPIDIdP{EntityID: ed.EntityID, Name: displayName(ed)})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(r.list) == 0 {
		return nil, fmt.Errorf("%s: no identity provider (no md:EntityDescriptor with an md:IDPSSODescriptor)", name)
	}
	slices.SortFunc(r.list, func(a, b apiclient.SPIDIdP) int {
		return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name))
	})
	return r, nil
}

// IdPs returns the identity providers sorted by name.
func (r *Registry) IdPs() []apiclient.SPIDIdP { return slices.Clone(r.list) }

// Lookup returns the metadata of the IdP with entityID.
func (r *Registry) Lookup(entityID string) (*saml.EntityDescriptor, bool) {
	ed, ok := r.byID[entityID]
	return ed, ok
}

func checkIdP(ed *saml.EntityDescriptor) error {
	d := ed.IDPSSODescriptors[0]
	hasSSO := false
	for _, s := range d.SingleSignOnServices {
		if (s.Binding == saml.HTTPPostBinding || s.Binding == saml.HTTPRedirectBinding) && strings.HasPrefix(s.Location, "http") {
			hasSSO = true
		}
	}
	if !hasSSO {
		return errors.New("no SingleSignOnService with the HTTP-POST or HTTP-Redirect binding")
	}
	for _, kd := range d.KeyDescriptors {
		if (kd.Use == "" || kd.Use == "signing") && len(kd.KeyInfo.X509Data.X509Certificates) > 0 {
			return nil
		}
	}
	return errors.New("no signing certificate (md:KeyDescriptor use=\"signing\")")
}

func displayName(ed *saml.EntityDescriptor) string {
	if o := ed.Organization; o != nil {
		for _, list := range [][]saml.LocalizedName{o.OrganizationDisplayNames, o.OrganizationNames} {
			for _, n := range list {
				if n.Lang == "it" && n.Value != "" {
					return strings.TrimSpace(n.Value)
				}
			}
			for _, n := range list {
				if n.Value != "" {
					return strings.TrimSpace(n.Value)
				}
			}
		}
	}
	return ed.EntityID
}

func flatten(e saml.EntitiesDescriptor) []saml.EntityDescriptor {
	out := slices.Clone(e.EntityDescriptors)
	for _, sub := range e.EntitiesDescriptors {
		out = append(out, flatten(sub)...)
	}
	return out
}

// rootName is the local name of the document's first element.
func rootName(data []byte) string {
	d := xml.NewDecoder(bytes.NewReader(data))
	for {
		t, err := d.Token()
		if err != nil {
			return ""
		}
		if se, ok := t.(xml.StartElement); ok {
			return se.Name.Local
		}
	}
}

// MarshalRegistry writes IdP metadata as a registry file of AgID's shape (one md:EntitiesDescriptor), e.g. for a
// lab whose IdP runs in a test process.
func MarshalRegistry(idps ...*saml.EntityDescriptor) ([]byte, error) {
	var all saml.EntitiesDescriptor
	for _, ed := range idps {
		all.EntityDescriptors = append(all.EntityDescriptors, *ed)
	}
	b, err := xml.Marshal(all)
	if err != nil {
		return nil, fmt.Errorf("writing IdP registry: %w", err)
	}
	return b, nil
}
