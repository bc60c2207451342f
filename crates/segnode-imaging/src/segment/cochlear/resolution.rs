//! Whether an array's contact count is resolved by the grid and the pattern, or only "as seen".
//!
//! A contact is a peak of the metal profile between two dips. Sampled at fewer than three voxels per
//! pitch, the sampling phase can put the samples on the two flanks of every peak at equal heights, so
//! the rhythm vanishes from the profile (at two voxels per pitch, the Nyquist limit, it does for half
//! the phases; partial volume and the scanner's blur only flatten it further). Below three voxels of
//! the coarsest axis per pitch the count is therefore not resolved, whatever it reads. A pattern whose
//! gaps do not fit one pitch (a contact missing, extra or cut by the field) is not resolved either.
//! Nor is a count below what any array carries (MED-EL's 12 are the fewest) when the array lies whole
//! in the field (no contact within a pitch of its edge; the lead may leave it): contacts were missed. An
//! array cut by the field's edge may show fewer.
//! The count is then still reported as seen, flagged with the reason, never guessed.

use super::contacts::ArrayContacts;

/// Parameters of the resolution test.
#[derive(Debug, Clone)]
pub struct ResolutionParams {
    /// Fewest voxels of the coarsest axis per pitch for the profile to resolve the contacts: three
    /// samples per period leave a dip between two peaks at any sampling phase, two (Nyquist) do not.
    pub min_pitch_voxels: f64,
    /// Fewest contacts of any array (MED-EL 12; Advanced Bionics 16, Cochlear Nucleus 22): fewer in an
    /// array that lies whole in the field means contacts were missed.
    pub min_array_contacts: usize,
    /// An array is cut by the field when a contact lies within its pitch and this margin of the field's
    /// edge (mm): half a contact's length and the blur past the last one seen.
    pub edge_margin_mm: f64,
}

impl Default for ResolutionParams {
    fn default() -> Self {
        ResolutionParams {
            min_pitch_voxels: 3.0,
            min_array_contacts: 12,
            edge_margin_mm: 1.0,
        }
    }
}

/// Why the count of `found` is not resolved on a grid whose coarsest voxel is `coarsest_mm`, or `None`
/// when it is; `edge_gap_mm`: the distance of the contact nearest to the field's edge from it.
pub fn unresolved(
    found: &ArrayContacts,
    coarsest_mm: f64,
    edge_gap_mm: f64,
    rp: &ResolutionParams,
) -> Option<String> {
    let Some(pitch) = found.pitch_mm else {
        return Some("too few contacts to measure a pitch".into());
    };
    let voxels = pitch / coarsest_mm;
    if voxels < rp.min_pitch_voxels {
        return Some(format!(
            "the pitch ({pitch:.2} mm) spans {voxels:.1} voxels of the coarsest axis ({coarsest_mm:.2} mm), \
             fewer than the {:.0} the profile needs to resolve contacts",
            rp.min_pitch_voxels
        ));
    }
    let n = found.contacts.len();
    let cut_by_field = edge_gap_mm <= pitch + rp.edge_margin_mm;
    if n < rp.min_array_contacts && !cut_by_field {
        return Some(format!(
            "{n} contacts in an array that lies whole in the field, fewer than any array carries ({})",
            rp.min_array_contacts
        ));
    }
    if !found.consistent {
        return Some(format!(
            "the gaps between the contacts do not fit one pitch ({pitch:.2} mm)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(pitch: Option<f64>, consistent: bool) -> ArrayContacts {
        ArrayContacts {
            contacts: vec![[0.0; 3]; 16],
            pitch_mm: pitch,
            length_mm: 0.0,
            insertion_angle_deg: None,
            order_from_spiral: false,
            notes: Vec::new(),
            used_blobs: Vec::new(),
            consistent,
            merged_filled: 0,
            mask: Vec::new(),
            mask_excludes_cores: false,
            background: 0.0,
            metal_level: 0.0,
        }
    }

    #[test]
    fn a_pitch_under_three_voxels_is_unresolved() {
        let rp = ResolutionParams::default();
        assert!(unresolved(&found(Some(0.8), true), 0.4, 10.0, &rp).is_some());
        assert!(unresolved(&found(Some(1.3), true), 0.4, 10.0, &rp).is_none());
        assert!(unresolved(&found(Some(0.8), true), 0.1, 10.0, &rp).is_none());
    }

    #[test]
    fn an_irregular_pattern_or_no_pitch_is_unresolved() {
        let rp = ResolutionParams::default();
        assert!(unresolved(&found(Some(1.3), false), 0.1, 10.0, &rp).is_some());
        assert!(unresolved(&found(None, true), 0.1, 10.0, &rp).is_some());
    }

    #[test]
    fn fewer_contacts_than_any_array_are_unresolved_unless_the_field_cuts_the_array() {
        let rp = ResolutionParams::default();
        let mut f = found(Some(1.3), true);
        f.contacts.truncate(4);
        assert!(unresolved(&f, 0.1, 10.0, &rp).is_some());
        assert!(unresolved(&f, 0.1, 2.0, &rp).is_none());
    }
}
