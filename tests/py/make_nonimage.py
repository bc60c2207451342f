"""Objects a PACS forwards with a CT study that no segnode pipeline reads, in the CT's study.

usage: make_nonimage.py CT_FILE OUT_DIR

Writes OUT_DIR/{dose_sr,ko,pr,pdf,cr}.dcm: an X-Ray Radiation Dose SR, a Key Object Selection naming the
CT slice, a Grayscale Softcopy Presentation State, an Encapsulated PDF and a Computed Radiography image
(a scout of another modality; the caller may compress it, e.g. to JPEG-LS), each in a series of its own.
Prints one JSON line: file -> (SOP class UID, SOP instance UID, series UID).
"""
import json
import sys
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def code(value, scheme, meaning):
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def base(ct, sop_class, modality, number):
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    for k in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
              "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        setattr(ds, k, getattr(ct, k, ""))
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = number
    ds.InstanceNumber = 1
    ds.Manufacturer = "test"
    ds.ContentDate, ds.ContentTime = "20260101", "120000"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def sr_root(ds, concept, template=None):
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([concept])
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    if template:
        t = Dataset()
        t.MappingResource, t.TemplateIdentifier = "DCMR", template
        ds.ContentTemplateSequence = Sequence([t])


def main():
    ct = pydicom.dcmread(sys.argv[1])
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    made = {}

    dose = base(ct, "1.2.840.10008.5.1.4.1.1.88.67", "SR", 990)
    sr_root(dose, code("113701", "DCM", "X-Ray Radiation Dose Report"), "10011")
    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", "NUM"
    item.ConceptNameCodeSequence = Sequence([code("113813", "DCM", "CT Dose Length Product Total")])
    mv = Dataset()
    mv.NumericValue = "412.5"
    mv.MeasurementUnitsCodeSequence = Sequence([code("mGy.cm", "UCUM", "mGy.cm")])
    item.MeasuredValueSequence = Sequence([mv])
    dose.ContentSequence = Sequence([item])

    ko = base(ct, "1.2.840.10008.5.1.4.1.1.88.59", "KO", 991)
    sr_root(ko, code("113000", "DCM", "Of Interest"), "2010")
    img = Dataset()
    img.RelationshipType, img.ValueType = "CONTAINS", "IMAGE"
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ct.SOPClassUID, ct.SOPInstanceUID
    img.ReferencedSOPSequence = Sequence([ref])
    ko.ContentSequence = Sequence([img])

    pr = base(ct, "1.2.840.10008.5.1.4.1.1.11.1", "PR", 992)
    pr.ContentLabel, pr.ContentDescription = "WINDOW", "lung window"
    pr.PresentationCreationDate, pr.PresentationCreationTime = "20260101", "120000"
    soft = Dataset()
    soft.WindowCenter, soft.WindowWidth = "-600", "1500"
    pr.SoftcopyVOILUTSequence = Sequence([soft])

    pdf = base(ct, "1.2.840.10008.5.1.4.1.1.104.1", "DOC", 993)
    pdf.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf.DocumentTitle = "report"
    pdf.BurnedInAnnotation = "YES"
    pdf.ConceptNameCodeSequence = Sequence([])
    pdf.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"

    cr = pydicom.dcmread(sys.argv[1])
    cr.SOPClassUID = cr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    cr.SOPInstanceUID = cr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    cr.SeriesInstanceUID = generate_uid()
    cr.Modality, cr.SeriesNumber = "CR", 994
    cr.PixelRepresentation = 0
    cr.PixelData = (cr.pixel_array.astype("int32") - cr.pixel_array.min()).astype("uint16").tobytes()
    cr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian

    for name, ds in [("dose_sr", dose), ("ko", ko), ("pr", pr), ("pdf", pdf), ("cr", cr)]:
        path = out / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        made[name] = [str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)]
    print(json.dumps(made))


if __name__ == "__main__":
    main()
