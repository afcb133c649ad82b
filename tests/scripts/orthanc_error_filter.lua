-- Test PACS: a ReceivedInstanceFilter that fails for every instance. Orthanc 1.10.1 answers the
-- C-STORE with 0xA700 (Refused: Out of resources) and does not store the instance.
function ReceivedInstanceFilter(dicom, origin, info)
  error("pacsnode test: instance refused")
end
