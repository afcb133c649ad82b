-- Test PACS: Orthanc's ReceivedInstanceFilter refusing every instance. Orthanc 1.10.1 still
-- answers the C-STORE with 0x0000 (Success) and drops the instance.
function ReceivedInstanceFilter(dicom, origin, info)
  return false
end
