pub mod pdfium;
