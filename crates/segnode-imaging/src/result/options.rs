//! What a site configures about a result object: its series number and description, the equipment it
//! names, and for image forms the display window and the note burned into the legend. One struct for
//! every form; each form reads the fields it needs.

/// A display window in HU (DICOM Window Center / Width).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub center: f64,
    pub width: f64,
}

impl Window {
    /// Lung parenchyma: W 1500 / L −600.
    pub const LUNG: Window = Window {
        center: -600.0,
        width: 1500.0,
    };
    /// Temporal bone with metal: W 4000 / L 700.
    pub const TEMPORAL_BONE: Window = Window {
        center: 700.0,
        width: 4000.0,
    };
    /// Soft tissue: W 400 / L 40.
    pub const SOFT_TISSUE: Window = Window {
        center: 40.0,
        width: 400.0,
    };

    /// The 8-bit grey level of `hu` (DICOM PS3.3 C.11.2.1.2.1, linear function).
    pub fn grey(&self, hu: f64) -> u8 {
        let w = self.width.max(2.0);
        let y = ((hu - (self.center - 0.5)) / (w - 1.0) + 0.5) * 255.0;
        y.round().clamp(0.0, 255.0) as u8
    }
}

/// Configurable parts of a result object.
#[derive(Debug, Clone)]
pub struct ResultOptions {
    pub series_number: i32,
    pub series_description: String,
    pub content_label: String,
    pub content_description: String,
    pub content_creator: String,
    pub manufacturer: String,
    pub model_name: String,
    pub device_serial_number: String,
    pub software_version: String,
    pub instance_number: i32,
    /// Display window of image forms (the overlay series).
    pub window: Window,
    /// Note burned into an overlay's legend (e.g. "not for diagnosis"); empty: none.
    pub note: String,
}

impl Default for ResultOptions {
    fn default() -> Self {
        ResultOptions {
            series_number: 9001,
            series_description: "segnode segmentation".into(),
            content_label: "SEGNODE".into(),
            content_description: "Automatic segmentation by segnode".into(),
            content_creator: "segnode^".into(),
            manufacturer: "segnode".into(),
            model_name: "segnode".into(),
            device_serial_number: "segnode-1".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            instance_number: 1,
            window: Window::SOFT_TISSUE,
            note: "segnode - not for diagnosis".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_maps_the_dicom_linear_function() {
        let w = Window::LUNG;
        assert_eq!(w.grey(-2000.0), 0);
        assert_eq!(w.grey(500.0), 255);
        assert_eq!(w.grey(-600.0), 128);
    }
}
