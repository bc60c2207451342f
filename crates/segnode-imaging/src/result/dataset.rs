//! Small helpers to build DICOM data sets by value: strings, decimal strings that fit 16 characters,
//! sequences and code items.

use crate::segment::codes::CodedConcept;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

pub type Obj = InMemDicomObject;

pub fn put_str(obj: &mut Obj, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

pub fn put_u16(obj: &mut Obj, tag: Tag, value: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

pub fn put_seq(obj: &mut Obj, tag: Tag, items: Vec<Obj>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

/// A decimal string (DS) of at most 16 characters.
pub fn ds(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    for prec in (0..=10).rev() {
        let s = format!("{v:.prec$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{v:.3e}")
}

/// Backslash-separated decimal strings.
pub fn ds_multi(v: &[f64]) -> String {
    v.iter().map(|x| ds(*x)).collect::<Vec<_>>().join("\\")
}

/// A Code Sequence item.
pub fn code_item(c: &CodedConcept) -> Obj {
    let mut o = Obj::new_empty();
    put_str(&mut o, tags::CODE_VALUE, VR::SH, c.value);
    put_str(&mut o, tags::CODING_SCHEME_DESIGNATOR, VR::SH, c.scheme);
    put_str(&mut o, tags::CODE_MEANING, VR::LO, c.meaning);
    o
}

pub fn item(f: impl FnOnce(&mut Obj)) -> Obj {
    let mut o = Obj::new_empty();
    f(&mut o);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        assert_eq!(ds(-1.0), "-1");
        assert_eq!(ds(0.9765625), "0.9765625");
        assert_eq!(ds(-249.51171875), "-249.51171875");
        assert!(ds(-123.456789012345678).len() <= 16);
        assert!(
            (ds(-123.456789012345678).parse::<f64>().unwrap() + 123.456789012345678).abs() < 1e-9
        );
        assert!(ds(1.0 / 3.0).len() <= 16);
        assert_eq!(ds_multi(&[1.0, 0.0, 0.5]), "1\\0\\0.5");
    }
}
