pub mod pdfium;
pub mod run;
pub mod stage;
pub mod state;
