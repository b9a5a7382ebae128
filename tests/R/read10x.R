#!/usr/bin/env Rscript
# Independent reader for the service's 10x mtx output: reads DIR (matrix.mtx.gz,
# features.tsv.gz, barcodes.tsv.gz) with Seurat::Read10X and writes to OUT.tsv a summary
# that tests/python/reference.py compares with the expected matrix:
#   n_genes<TAB>N, n_cells<TAB>N, nnz<TAB>N (stored entries),
#   one `cell<TAB>SUM<TAB>ID` line per column (cell) and one `gene<TAB>SUM<TAB>ID` line
#   per row (gene), in the matrix's order. SUMs are printed with %.17g, which round-trips
#   a double exactly (and prints integral sums below 1e17 as integers); the ID is last
#   so that it may contain tabs. Strings are written as the bytes R read them.
# Usage: Rscript read10x.R DIR OUT.tsv; exits 3 when library(Seurat) does not load.
args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 2) {
  stop("usage: Rscript read10x.R DIR OUT.tsv")
}
loaded <- tryCatch({
  suppressPackageStartupMessages({
    library(Matrix)
    library(Seurat)
  })
  TRUE
}, error = function(e) {
  message("cannot load Seurat: ", conditionMessage(e))
  FALSE
})
if (!loaded) {
  quit(save = "no", status = 3)  # reference.py: skip Read10X (or fail when R is required)
}
m <- Seurat::Read10X(data.dir = args[1], gene.column = 1)
if (is.list(m)) {
  stop("Read10X returned a list of ", length(m), " matrices (more than one feature type)")
}
m <- as(m, "CsparseMatrix")
num <- function(x) sprintf("%.17g", x)
lines <- c(
  paste0("n_genes\t", nrow(m)),
  paste0("n_cells\t", ncol(m)),
  paste0("nnz\t", length(m@x)),
  if (ncol(m) > 0) paste0("cell\t", num(Matrix::colSums(m)), "\t", colnames(m)),
  if (nrow(m) > 0) paste0("gene\t", num(Matrix::rowSums(m)), "\t", rownames(m))
)
con <- file(args[2], open = "wb")
writeLines(lines, con = con, sep = "\n", useBytes = TRUE)
close(con)
